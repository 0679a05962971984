"""The test rig: the real vantage6 server, local test images and helpers to drive them."""
