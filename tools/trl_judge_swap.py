# trl_judge_swap: prepended to the conftest.py of TRL's tests by tools/trl_judge.py. With
# JUDGE=ours it swaps the library's trainers in for TRL's before the test files import them.
import importlib.util as _util
import os as _os

import trl.import_utils as _import_utils

if not hasattr(_import_utils, "is_joblib_available"):  # asked for by older test files
    _import_utils.is_joblib_available = lambda: _util.find_spec("joblib") is not None

if _os.environ.get("JUDGE") == "ours":
    import trl as _trl

    from constrained_align.config import DualConfig as _DualConfig
    from constrained_align.integrations.trl import ConstrainedDPOTrainer as _Ours
    from constrained_align.integrations.trl import LagrangianCallback as _Callback

    class _OursDPO(_Ours):
        """``ConstrainedDPOTrainer(loss="dpo")``: stock DPO by delegation."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("loss", "dpo")
            super().__init__(*args, **kwargs)

    def _zero_cost(prompts, responses, contexts):
        return [0.0] * len(responses)

    class _OursGRPO(_trl.GRPOTrainer):
        """Stock GRPO with a LagrangianCallback on a zero cost (λ stays 0)."""

        def __init__(self, model, reward_funcs=None, args=None, *rest, **kwargs):
            if reward_funcs is None:  # no reward at all: TRL's own error, as for a user
                super().__init__(model, reward_funcs, args, *rest, **kwargs)
            callback = _Callback(
                _zero_cost,
                dual=_DualConfig(
                    multiplier="projected", lambda_init=0.0, lambda_lr=1e-3, cost_limit=0.0
                ),
                allow_no_kl=_os.environ.get("JUDGE_STRICT") != "1",
            )
            funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
            if args is not None and getattr(args, "reward_weights", None) is not None:
                args.reward_weights = [*args.reward_weights, 1.0]
            classes = kwargs.get("reward_processing_classes")
            if classes is not None:  # one per reward function: none for the cost function
                classes = classes if isinstance(classes, list) else [classes]
                kwargs["reward_processing_classes"] = [*classes, None]
            super().__init__(model, [*funcs, callback.cost_fn], args, *rest, **kwargs)
            callback.attach(self)

    _trl.DPOTrainer = _OursDPO
    _trl.GRPOTrainer = _OursGRPO
