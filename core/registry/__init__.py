"""The model registry under the workdir, split by concern (one namespace for its callers: `from core import registry`):

- `version`: a version folder's layout (`Version`: every file name spelt once), folder-name rules, `RegistryError`;
- `store`: immutable versions (every file hashed at registration, checked on use), the champion pointer swapped
  atomically, the promotion log, rollback, pruning of versions;
- `approval`: the four-eyes review workflow of `gate.approval=manual` (candidate, approve, reject, expire);
- `export`: the version's raw-text SavedModel and the champion's copy for TF Serving;
- `scoring`: a registered version applied to sentences; `identity`: who started a run, who reviews.
"""

from core.registry.approval import (CANDIDATE, REVIEWS, approval_record, approve, candidate, expire, expired,
                                    promote_by_hand, propose, reject, review, reviews, withdraw_expired)
from core.registry.store import (CHAMPION, HASH_COVERAGE, LOG, champion, champion_scores_dir, champion_stack,
                                 find_registered, integrity, locked, model_names, new_version, promote,
                                 promotion_log, protected_versions, prune_versions, register, remove_leftovers,
                                 resolve_version, rollback, tree_size, verify, versions)
from core.registry.version import SAVED_MODEL, RegistryError, Version, model_root, version_dir

__all__ = ["CANDIDATE", "CHAMPION", "HASH_COVERAGE", "LOG", "REVIEWS", "SAVED_MODEL", "RegistryError", "Version",
           "approval_record", "approve", "candidate", "champion", "champion_scores_dir", "champion_stack", "expire",
           "expired", "find_registered", "integrity", "locked", "model_names", "model_root", "new_version", "promote",
           "promote_by_hand", "promotion_log", "propose", "protected_versions", "prune_versions", "register", "reject",
           "remove_leftovers", "resolve_version", "review", "reviews", "rollback", "tree_size", "verify", "versions",
           "version_dir", "withdraw_expired"]
