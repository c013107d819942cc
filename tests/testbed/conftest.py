import pytest


@pytest.fixture(scope="session")
def quick_testbed(tmp_path_factory):
    """The quick testbed (reference trained in ~10 s), built once per test session.

    tests/testbed and tests/eval each define this fixture over the same cache folder, so
    whichever runs second finds everything cached.
    """
    from robustpo.testbed import TestbedConfig, build

    cache = tmp_path_factory.getbasetemp() / "testbed-cache"
    return build(TestbedConfig.quick(cache_dir=str(cache), rhos=(0.2, 0.8)), log=lambda _: None)
