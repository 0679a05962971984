"""Use case: tell the server what this node offers (``node_info_update``)."""
from __future__ import annotations

from v6node.app.emitter import Emitter
from v6node.domain.config import NodeConfig
from v6node.domain.egress import EgressConfig
from v6node.ports.database_catalog import DatabaseCatalog


class ShareNodeDetails:
    """Send the node's details under the reference's key names.

    Business rules:
    - nothing is sent when ``share_config`` is false;
    - only policies that are set are shared; databases with their labels and types, and
      the column names of csv and parquet files (never their data);
    - what algorithms may reach: the whitelisted domains, IPs and ports, the SSH tunnels'
      hostnames and the linked containers' aliases (never keys, users or fingerprints).
    """

    def __init__(self, config: NodeConfig, catalog: DatabaseCatalog, emitter: Emitter) -> None:
        self.config = config
        self.catalog = catalog
        self.emitter = emitter

    async def __call__(self) -> None:
        if not self.config.share_config:
            return
        policies = self.config.policies
        details: dict[str, object] = {
            "encryption": self.config.encryption_enabled,
            "allowed_algorithms": list(policies.allowed_algorithms) or "all",
            "database_labels": [db.label for db in self.config.databases],
            "database_types": {f"db_type_{db.label}": db.type for db in self.config.databases},
        }
        if policies.allowed_users:
            details["allowed_users"] = list(policies.allowed_users)
        if policies.allowed_organizations:
            details["allowed_orgs"] = list(policies.allowed_organizations)
        columns = {}
        for db in self.config.databases:
            if names := await self.catalog.columns(db):
                columns[f"columns_{db.label}"] = names
        if columns:
            details["database_columns"] = columns
        details.update(egress_details(self.config.egress))
        await self.emitter.emit("node_info_update", details)


def egress_details(egress: EgressConfig) -> dict[str, object]:
    """What the node lets algorithms reach, by name only (v6node's keys; the reference shares none)."""
    details: dict[str, object] = {}
    if egress.whitelist is not None:
        whitelist = egress.whitelist
        details["whitelist"] = {"domains": list(whitelist.domains), "ips": list(whitelist.ips), "ports": list(whitelist.ports)}
    if egress.tunnels:
        details["ssh_tunnels"] = [f"{t.hostname}:{t.bind_port}" for t in egress.tunnels]
    if egress.services:
        details["docker_services"] = [alias for service in egress.services for alias in service.aliases]
    return details
