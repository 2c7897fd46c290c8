"""Train state: step, parameters, optimizer state. A pytree, so it jits, donates and saves."""
from __future__ import annotations

from typing import Any

import flax.struct
import optax


@flax.struct.dataclass
class TrainState:
  step: Any  # int32 scalar array
  params: Any
  opt_state: Any

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation):
    import jax.numpy as jnp
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def apply_gradients(self, grads, tx: optax.GradientTransformation):
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)
