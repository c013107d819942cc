"""Trained pairwise preference models as judges: `pairwise:PATH`, `pairwise-family:PATH`.

PATH is a pairwise model folder or a pairwise family folder (`robustpo reward train` with
`reward.kind: pairwise`, rewards/pairwise.py). The verdict is P(first ≻ second) = σ(ℓ), ℓ the
antisymmetric logit f(x, first, second) − f(x, second, first); for a family, ℓ is the members'
mean logit (or member=K's alone), so antisymmetry holds for the family too. Asking both
orders therefore returns the same probability twice, and the comparison log records both, as
for every judge. Comparisons are batched, memoised by (prompt, first, second) (and their
reverse: 1 − p, exactly), and their truncations counted in `truncation` (the documented rule
of rewards/pairwise.py; each verdict's raw record also says whether its pair was cut).
"""

from __future__ import annotations

from robustpo.judges.base import Verdict, text_hash
from robustpo.judges.reward import _sigmoid


class PairwiseJudge:
    def __init__(self, family, *, member: int | None = None, name: str | None = None, kind: str = "pairwise"):
        from robustpo.judges.base import JudgeError

        self.family, self.member = family, member
        k = len(family.names)
        if member is not None and not 0 <= member < k:
            raise JudgeError(f"{kind}:{name}: member {member} out of range for a family of {k}")
        self.name = f"{kind}:{name or family.name}" + ("" if member is None else f"[{member}]")
        self._memo: dict[tuple, tuple[float, bool]] = {}    # (prompt, first, second) hashes -> (logit, cut)

    @property
    def truncation(self) -> dict:
        """Distinct comparisons encoded so far (an order and its reverse are one), and how many had
        their prompt / responses cut."""
        return self.family.stats.as_dict()

    def _logits(self, prompts, first, second) -> list[tuple[float, bool]]:
        keys = [(text_hash(p), text_hash(a), text_hash(b)) for p, a, b in zip(prompts, first, second)]
        todo: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            reverse = (key[0], key[2], key[1])
            if key not in self._memo and key not in todo and reverse not in todo:   # one forward pair per comparison
                todo[key] = i
        if todo:
            idx = list(todo.values())
            logits = self.family.logits([prompts[i] for i in idx], [first[i] for i in idx],
                                        [second[i] for i in idx])                      # (n, K)
            values = logits[:, self.member] if self.member is not None else logits.mean(dim=1)
            for key, v, c in zip(todo, values.tolist(), self.family.last_cut):
                self._memo[key] = (float(v), c)
                self._memo[(key[0], key[2], key[1])] = (-float(v), c)   # the reverse order, exactly
        return [self._memo[k] for k in keys]

    def compare_detailed(self, prompts: list, first: list, second: list) -> list[Verdict]:
        return [Verdict(_sigmoid(v), raw={"logit": v, "truncated": c}) for v, c in self._logits(prompts, first, second)]

    def compare(self, prompts: list, first: list, second: list) -> list[float]:
        return [v.prob for v in self.compare_detailed(prompts, first, second)]


def load_pairwise_judge(path: str, kind: str, **options) -> PairwiseJudge:
    from robustpo.judges.base import JudgeError
    from robustpo.rewards.family import FamilyError
    from robustpo.rewards.pairwise import PairwiseFamily

    member = options.pop("member", None)
    try:
        family = PairwiseFamily(path, **options)
    except FamilyError as e:
        raise JudgeError(f"judge '{kind}:{path}': {e}") from None
    return PairwiseJudge(family, member=None if member is None else int(member), name=path, kind=kind)

