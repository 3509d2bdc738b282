"""The virtual gateway's forwarding plane: L2 termination, subscriber table, its sync,
Router Advertisements."""
