"""Profile engines: where user profiles and segment memberships live and how exports are written."""
