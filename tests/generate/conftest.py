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


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, tiny_policy_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from robustpo.tiny import tiny_config

    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    cfg = tiny_config("llama", len(tok), hidden_size=32, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg.num_labels = 1
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("reward")
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
