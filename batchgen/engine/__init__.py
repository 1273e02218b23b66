"""The I/O edge: the API client, the event listener, the state store, downloads and the runner."""
