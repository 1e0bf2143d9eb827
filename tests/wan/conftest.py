"""The integration fixtures (a gateway with simulated meters on a pty), shared with the WAN tests."""

from tests.integration.conftest import captured_logs, gateway_factory, sim_line

__all__ = ["captured_logs", "gateway_factory", "sim_line"]
