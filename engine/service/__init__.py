"""The services the entry points run: the decision service and its batching, the runtime
(the composition root: adapters meet models here), watchers, the trainer, metrics and logs."""
