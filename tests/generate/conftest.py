import pytest

from genhelpers import PROMPT_TEXTS


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    from robustpo.tiny import build_tiny_model, train_tokenizer

    corpus = PROMPT_TEXTS * 3 + ["cats and dogs are animals", " 5. 8. 2 plus 3 is 5."] * 3
    tok = train_tokenizer(corpus, vocab_size=300)
    path = tmp_path_factory.mktemp("policy")
    build_tiny_model(tok, "llama", seed=0, hidden_size=32).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
