"""The pure command builders: what they promise about distributed."""

from distributed.versions import optional_packages, required_packages

from launcher.remote import commands


def test_forkserver_preload_covers_what_distributed_preloads():
    # The worker wrapper starts distributed's forkserver early, with this list;
    # distributed itself would preload "distributed" and these packages.
    # Missing one would make every forked worker import it on its own.
    assert set(commands.FORKSERVER_PRELOAD) >= {"distributed", *required_packages, *optional_packages}


def test_the_worker_wrapper_gets_its_preload_list_and_compiles(tmp_path):
    # A host of several workers preloads all they share; one of one worker only what it needs to start.
    import json

    from launcher.config.inventory import load_inventory

    inv_path = tmp_path / "hosts.toml"
    inv_path.write_text('[cluster]\nname = "pre"\n[scheduler]\naddress = "127.0.0.2"\n'
                        '[[host]]\naddress = "127.0.0.3"\nnworkers = 3\n[[host]]\naddress = "127.0.0.4"\nnworkers = 1\n')
    inv = load_inventory(str(inv_path))
    preloads = []
    for spec in inv.hosts:
        argv = commands.workers_argv(inv, spec, spec.address, "tls://127.0.0.2:8786", 2**30)
        assert argv[1:3] == ["-c", commands.WAIT_THEN_WORKER]
        preloads.append(json.loads(argv[6]))
    assert preloads == [commands.FORKSERVER_PRELOAD, ["distributed"]]
    compile(commands.WAIT_THEN_WORKER, "<wrapper>", "exec")


def test_the_flag_the_wrapper_sets_exists_in_distributed():
    # Setting it spares the nannies' process importing pandas & co; if a new
    # distributed renamed it, the wrapper would still work, only slower.
    import distributed.utils

    assert hasattr(distributed.utils, "_forkserver_preload_set")
