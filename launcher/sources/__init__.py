"""Worker sources: where a cluster's workers come from, behind one small interface.

The verbs (launch, stop, status, reconcile, restart, ``launcher.Cluster``)
keep what every cluster has, the scheduler on an SSH host, the state record,
preflight, the wait at the scheduler, and hand each kind of workers to its
source: :mod:`~launcher.sources.base` is the interface
(:class:`~launcher.sources.base.WorkerSource`: start a tree, say whether it
runs, stop it and prove it gone, describe it for ``status``),
:mod:`~launcher.sources.ssh` the SSH hosts of ``[[host]]``, and
:mod:`~launcher.sources.registry` builds the sources an inventory asks for
and finds the one that stops a recorded tree (``HostRecord.source``). A new
kind (a batch scheduler's pool) is one more module and one registry entry.
"""
