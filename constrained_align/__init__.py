"""constrained-align: safe (constrained) alignment of language models.

maximize E[r] − β·KL(π ‖ π_ref) subject to E[c] ≤ cost_limit, with c > 0 unsafe and λ ≥ 0 on
the cost, solved by Safe RLHF's PPO-Lagrangian or by the RL-free dual methods. Importing the
package has no side effects; import sub-packages for what you need.
"""

__version__ = "0.1.0"
