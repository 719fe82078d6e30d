import torch

from tuco_kernels.core.capture import last_token_index
from tuco_kernels.prompts.batching import make_batches


def test_batches_respect_budget_sort_and_right_pad():
    lists = [[1] * 3, [2] * 10, [3] * 5, [4] * 10, [5] * 1]
    batches = make_batches(lists, batch_tokens=20, pad_id=0)
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(5))
    for b in batches:
        B, T = b.input_ids.shape
        assert B * T <= 20 or B == 1
        for row, i in enumerate(b.indices):
            n = len(lists[i])
            assert b.input_ids[row, :n].tolist() == lists[i]
            assert b.attention_mask[row].tolist() == [1] * n + [0] * (T - n)
    assert batches[0].indices == [1, 3]  # longest first, ties in input order


def test_overlong_prompt_goes_alone():
    batches = make_batches([[1] * 50, [2] * 2], batch_tokens=10)
    assert [b.indices for b in batches] == [[0], [1]]


def test_last_token_index_left_and_right_padding():
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    assert last_token_index(left).tolist() == [3, 3]
    assert last_token_index(right).tolist() == [1, 0]
