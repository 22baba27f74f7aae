"""The CIFAR-100 benchmark's multi-step learning-rate schedule for any ``transformers.Trainer``."""

from __future__ import annotations

import torch


class MultiStepScheduleMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer``): when ``args.lr_decay_epochs`` is set, the
    learning rate is multiplied by ``args.lr_decay_rate`` at each of those epochs, converted to optimizer steps, after
    the Trainer's linear warm-up if any. Without ``lr_decay_epochs`` the Trainer's own scheduler is used."""

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The Trainer's scheduler, or the multi-step decay of ``args.lr_decay_epochs``.

        Args:
            num_training_steps: total optimizer steps.
            optimizer: the optimizer (default: ``self.optimizer``).

        Returns:
            The learning-rate scheduler.
        """
        decay_epochs = getattr(self.args, "lr_decay_epochs", None)
        if not decay_epochs:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            steps_per_epoch = max(
                1.0, len(self.get_train_dataloader()) / self.args.gradient_accumulation_steps
            )
            milestones = [round(epoch * steps_per_epoch) for epoch in decay_epochs]
            warmup = self.args.get_warmup_steps(num_training_steps)
            rate = float(getattr(self.args, "lr_decay_rate", 0.1))

            def factor(step: int) -> float:
                warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
                return warm * rate ** sum(step >= m for m in milestones)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler
