"""partition: run one transformer across an edge device and servers.

Flow: profile -> plan -> deploy -> serve -> metrics. See README.md for the user's path.
"""

__version__ = "0.1.0"
