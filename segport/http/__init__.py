"""The HTTP API (FastAPI): the seed's endpoints, the API family, the admin API."""
