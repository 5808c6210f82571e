"""The process roles: one module per kind of process, each composing exactly the parts that process has."""
