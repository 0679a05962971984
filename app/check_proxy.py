"""Use case: check from the algorithms' side that their network reaches the node's proxy."""
from __future__ import annotations

import logging

from v6node.domain.config import NodeConfig
from v6node.domain.containers import managed_labels, proxy_check_spec
from v6node.domain.errors import NodeError
from v6node.ports.container_runtime import ContainerRuntime

log = logging.getLogger("v6node.node")


class CheckProxyReachable:
    """Run ``proxy_check_image`` on the algorithm network and ask the proxy for ``/health``.

    Business rules:
    - the start never reaches for a public registry on its own: the image is used only when
      it is present locally, or pulled when ``proxy_check_pull`` allows it; otherwise the
      check is skipped with one INFO line;
    - a failed check stops the node with the probe's output (a firewall, an engine that
      does not route internal networks to their gateway);
    - returns what was checked, for the node's "ready" line.
    """

    def __init__(self, config: NodeConfig, runtime: ContainerRuntime) -> None:
        self.config = config
        self.runtime = runtime

    async def __call__(self, network: str, host: str, port: int) -> str:
        image = self.config.proxy_check_image
        if image is None:
            log.info("proxy reachability check skipped (proxy_check_image is null)")
            return "reachability not checked: proxy_check_image is null"
        if await self.runtime.local_image_id(image) is None:
            if not self.config.proxy_check_pull:
                log.info(
                    "proxy reachability check skipped: the image %s is not present locally (pull it, name a local "
                    "image with proxy_check_image, or set proxy_check_pull: true)", image,
                )
                return f"reachability not checked: {image} is not present locally"
            try:
                await self.runtime.ensure_image(image, require_pull=False)
            except NodeError as exc:
                log.warning("could not check that algorithms reach the proxy: %s (set proxy_check_image)", exc)
                return f"reachability not checked: {image} could not be pulled"
        spec = proxy_check_spec(self.config.name, image, network, host, port)
        await self.runtime.remove_labelled({**managed_labels(self.config.name), "vantage6-type": "proxy-check"})
        # From every host that may run algorithms (one, on a single engine).
        results = await self.runtime.run_on_every_host(spec)
        failed = [
            f"{result.host}: exit code {result.exit_code}: {result.output.strip()[:300]!r}"
            for result in results
            if result.exit_code != 0 or '"ok"' not in result.output
        ]
        if failed:
            raise NodeError(
                f"algorithm containers on Docker network {network} cannot reach the node's proxy at "
                f"http://{host}:{port} (check container on {'; '.join(failed)}). "
                "The Docker engine may not route an internal network to its gateway, or a firewall "
                "blocks the port; see 'Networking' in the README."
            )
        log.info("algorithm containers reach the proxy at %s:%s", host, port)
        if len(results) > 1:
            return f"reachable from a container on the algorithm network on each of {len(results)} hosts"
        return "reachable from a container on the algorithm network"
