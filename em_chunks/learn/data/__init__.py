"""Training data: volumes by reference, chunk loading and patch sampling on workers, batch streaming."""

from em_chunks.learn.data.sampling import BatchSpec, Rejection
from em_chunks.learn.data.stream import BatchStream, local_batches
from em_chunks.learn.data.volumes import TrainingVolume, VolumeRef, training_volume

__all__ = ["BatchSpec", "BatchStream", "Rejection", "TrainingVolume", "VolumeRef", "local_batches", "training_volume"]
