"""Deployment beyond one machine: the Flyte 2 apps (``hubbub.deploy.flyte_apps``).

Importing this package is free; ``flyte_apps`` needs the ``flyte`` extra.
"""
