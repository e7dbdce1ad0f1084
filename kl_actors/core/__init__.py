"""The pure core: no sockets, files or clocks (`now` is passed in). Unit-tested."""
