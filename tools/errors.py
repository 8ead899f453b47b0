"""The engine's error tree. Every message says what is wrong and what to do next.

AutooptError
├── InvalidName          a target, experiment or label name that is not [a-z0-9][a-z0-9._-]*
├── TargetNotFound       no targets/<name>/target.md in the workspace
├── TargetSpecError      target.md does not parse (file and line named)
├── RuleViolation        the methodology forbids it (N < 3, scope, constant tuning)
├── PatchError           a patch that does not apply
├── BuildFailed          the build command failed (log tail attached)
├── DeployFailed         the service did not start or failed its health check
├── WorkloadFailed       the workload could not run at all
├── BackendUnavailable   docker / kubernetes not reachable
├── ProfilerUnavailable  a profiler is not installed
├── NotFound             an unknown build, deployment, run or profile id
└── AlreadyExists        would overwrite a record
"""

from __future__ import annotations


class AutooptError(Exception):
    """Base class: the message is shown to the agent as is."""


class InvalidName(AutooptError):
    pass


class TargetNotFound(AutooptError):
    pass


class TargetSpecError(AutooptError):
    pass


class RuleViolation(AutooptError):
    pass


class PatchError(AutooptError):
    pass


class BuildFailed(AutooptError):
    pass


class DeployFailed(AutooptError):
    pass


class WorkloadFailed(AutooptError):
    pass


class BackendUnavailable(AutooptError):
    pass


class ProfilerUnavailable(AutooptError):
    pass


class NotFound(AutooptError):
    pass


class AlreadyExists(AutooptError):
    pass
