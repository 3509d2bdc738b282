"""skat-plugin: VRRP high availability for a SKAT-style inline DPI/BRAS appliance."""

__version__ = "0.1.0"
