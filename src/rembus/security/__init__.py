"""Keys, registration, the broker's security files, TLS."""
