import numpy as np

from rnnstream.clients.sampling import sample


def test_zero_temperature_is_the_most_probable_token():
    assert sample([0.1, 0.7, 0.2], temperature=0) == 1


def test_top_k_samples_only_among_the_k_most_probable():
    rng = np.random.default_rng(0)
    probs = np.array([0.3, 0.05, 0.25, 0.4])
    assert {sample(probs, 1.0, top_k=2, rng=rng) for _ in range(200)} == {0, 3}


def test_low_temperature_sharpens():
    rng = np.random.default_rng(1)
    draws = [sample([0.4, 0.6], temperature=0.05, rng=rng) for _ in range(100)]
    assert sum(draws) >= 99
