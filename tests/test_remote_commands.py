"""The pure command builders: what they promise about distributed."""

from distributed.versions import optional_packages, required_packages

from launcher.remote import commands


def test_forkserver_preload_covers_what_distributed_preloads():
    # The worker wrapper starts distributed's forkserver early, with this list;
    # distributed itself would preload "distributed" and these packages.
    # Missing one would make every forked worker import it on its own.
    assert set(commands.FORKSERVER_PRELOAD) >= {"distributed", *required_packages, *optional_packages}


def test_the_worker_wrapper_carries_the_preload_list_and_compiles():
    assert repr(commands.FORKSERVER_PRELOAD) in commands.WAIT_THEN_WORKER
    compile(commands.WAIT_THEN_WORKER, "<wrapper>", "exec")


def test_the_flag_the_wrapper_sets_exists_in_distributed():
    # Setting it spares the nannies' process importing pandas & co; if a new
    # distributed renamed it, the wrapper would still work, only slower.
    import distributed.utils

    assert hasattr(distributed.utils, "_forkserver_preload_set")
