"""User confound features for the tests, imported as `confound_features:NAME` (tests/ is on the path)."""


def characters(prompts, responses):
    return [float(len(r)) for r in responses]


def raises_on_marker(prompts, responses):
    if any("zzbad" in r for r in responses):
        raise ValueError("cannot score zzbad")
    return [1.0] * len(responses)


def one_value(prompts, responses):
    return [1.0]


def nan_on_marker(prompts, responses):
    return [float("nan") if "zzbad" in r else 1.0 for r in responses]


NOT_CALLABLE = 3
