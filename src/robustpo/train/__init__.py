"""Training: preference objectives (preference.py), reward models (reward.py), the loop they share.

`robustpo.train(recipe, overrides=[...])` runs a preference training job like `robustpo train`
(robustpo.api.train): this package is callable, its modules import as usual.
"""

from robustpo.api import make_callable, train as _train

make_callable(__name__, _train)
