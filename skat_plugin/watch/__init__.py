"""The supervising daemon's event sources: each is a file descriptor the kernel makes
readable when something happened (nftables changed, a process died, a link moved, a file
was written), and the handler that reacts. The daemon's loop polls them; none polls the
kernel itself."""
