"""Result file stores: a local folder by default."""
