"""The ClickHouse profile engine: a server over HTTP, or chDB in process (versioned tables, one snapshot row)."""
