"""The web console (`reconcile console`): the fleet, runs and logs as each member may see them."""
