"""The controlled testbed: a summarisation analogue with a known gold reward and a length confound.

    from robustpo import testbed
    tb = testbed.build(testbed.TestbedConfig(rhos=(0.2,)))

See task.py (prompts, gold reward, demonstrator), reference.py (the reference policy),
pairs.py (gold labels and the length-bias knob ρ) and build.py (seeded, cached assembly).
"""

from robustpo.testbed.build import Testbed, TestbedConfig, build, default_cache_dir
from robustpo.testbed.task import gold_judge, gold_reward, gold_rewards

__all__ = ["Testbed", "TestbedConfig", "build", "default_cache_dir", "gold_judge", "gold_reward", "gold_rewards"]
