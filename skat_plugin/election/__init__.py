"""keepalived (or ucarp) and this appliance: whether the election process lives (pidfile),
its notify FIFO (fifo), its configuration (keepalived_conf), the verdict on this
appliance's fitness to be master (verdict, health, trackfile, restart) and split brain."""
