"""In-memory data is fetched by the batch: one indexing per batch instead of one per sample and a
collate, with the very same batches (values, dtypes, order), from any sampler position."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from trainer.data import ResumableDistributedSampler, batched_indexing
from trainer.train import batch_loader


class CountingTensors(Dataset):
    """Declares batched indexing and counts how often it is indexed."""

    batched_indexing = True

    def __init__(self, inner: TensorDataset) -> None:
        self.inner, self.calls = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        self.calls += 1
        return self.inner[index]


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(203, 5, generator=generator), torch.randint(0, 7, (203,), generator=generator))


def sampler(dataset, start: int) -> ResumableDistributedSampler:
    chosen = ResumableDistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=3, drop_last=False)
    chosen.set_epoch(4, start_index=start)
    return chosen


def test_batches_equal_the_per_sample_path_from_any_position():
    dataset = data()
    assert batched_indexing(dataset)
    for start in (0, 32, 37):  # a resumed epoch starts inside it, also off a batch boundary
        per_sample = list(DataLoader(dataset, sampler=sampler(dataset, start), batch_size=16))
        batched = list(batch_loader(dataset, sampler(dataset, start), 16))
        assert len(batched) == len(per_sample) > 0
        for mine, reference in zip(batched, per_sample, strict=True):
            assert [tensor.dtype for tensor in mine] == [tensor.dtype for tensor in reference]
            assert all(torch.equal(a, b) for a, b in zip(mine, reference, strict=True))


def test_one_indexing_per_batch():
    counting = CountingTensors(data())
    batches = list(batch_loader(counting, sampler(counting, 0), 16))
    assert counting.calls == len(batches) == 7  # 102 samples on this rank: 6 full batches and one of 6


def test_other_data_is_fetched_sample_by_sample():
    class Plain(Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, index: int):
            return torch.tensor([index])

    plain = Plain()
    assert not batched_indexing(plain)
    loader = batch_loader(plain, range(10), 4)
    assert loader.batch_size == 4
    assert [batch.flatten().tolist() for batch in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
