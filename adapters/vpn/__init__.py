"""The VPN client and the per-run forwarding on Docker (spec §9.3)."""
