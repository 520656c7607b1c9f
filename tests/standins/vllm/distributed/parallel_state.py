"""The stand-in's distributed state: the engine makes no group, so there is nothing to destroy."""

CALLS: list[str] = []


def destroy_model_parallel() -> None:
    CALLS.append("destroy_model_parallel")


def destroy_distributed_environment() -> None:
    CALLS.append("destroy_distributed_environment")
