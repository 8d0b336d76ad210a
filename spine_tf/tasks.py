"""The task table: the six per-disc grading tasks, in head order.

Everything that depends on the tasks (model heads, losses, metrics, dataset
features, serving signatures, reports) is derived from ``TASKS``, so adding a
task is one row here.
"""

import dataclasses

MISSING_LABEL = -1

# The six lumbar levels from the top down, and the SPIDER mask label of each
# disc: 201 is L5-S1, counting upwards.
LEVELS = ("T12-L1", "L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
# The vertebrae around them, top to bottom: T12 .. S1.
VERTEBRAE = tuple(level.split("-")[0] for level in LEVELS) + (LEVELS[-1].split("-")[1],)
FIRST_DISC_LABEL = 201
CANAL_LABEL = 100  # the spinal canal in SPIDER-convention masks

# The model input: a disc volume of rows x cols x sagittal slices (docs/design.md).
VOLUME_SHAPE = (112, 224, 9)
# Its name in the Keras model and the serving signatures (docs/design.md, "Serving signatures").
INPUT_NAME = "disc_volume"


@dataclasses.dataclass(frozen=True)
class Task:
    """One grading task: a head of the model and a column of the labels.

    Attributes:
        name: identifier used for head names, dataset features and outputs.
        class_names: human-readable name of each class, index = stored label.
        description: one line for reports and help texts.
        lesion: for lesion tasks, where the lesion lies (``"endplate"`` or
            ``"marrow"``) and on which side of the disc (``"upper"``/``"lower"``).
    """

    name: str
    class_names: tuple
    description: str
    lesion: tuple = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def output_names(self):
        """Names of the task's serving outputs: (probabilities, grade)."""
        return f"{self.name}_probabilities", f"{self.name}_grade"


TASKS = (
    Task("pfirrmann", ("1", "2", "3", "4", "5"), "Pfirrmann grade of disc degeneration"),
    Task("narrowing", ("normal", "mild", "moderate", "severe"), "disc height loss"),
    Task("endplate_upper", ("normal", "defect"), "defect of the endplate above the disc",
         lesion=("endplate", "upper")),
    Task("endplate_lower", ("normal", "defect"), "defect of the endplate below the disc",
         lesion=("endplate", "lower")),
    Task("marrow_upper", ("normal", "change"), "marrow signal change in the vertebra above",
         lesion=("marrow", "upper")),
    Task("marrow_lower", ("normal", "change"), "marrow signal change in the vertebra below",
         lesion=("marrow", "lower")),
)

TASK_NAMES = tuple(task.name for task in TASKS)
LESION_TASKS = tuple(task for task in TASKS if task.lesion is not None)


def _mirror_index(task):
    if task.lesion is None:
        return TASKS.index(task)
    kind, side = task.lesion
    other = {"upper": "lower", "lower": "upper"}[side]
    return next(i for i, t in enumerate(TASKS) if t.lesion == (kind, other))


MIRRORED = tuple(_mirror_index(task) for task in TASKS)
"""For each task (in order), the index of the task whose label it takes when the
volume is reflected across the disc plane: upper and lower swap, the rest stay."""


def task(name):
    """Returns the task called ``name``; raises KeyError listing the valid names."""
    for candidate in TASKS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown task {name!r}; tasks are {', '.join(TASK_NAMES)}")


def level_of_disc_label(label):
    """Level name of a SPIDER disc label (201 = L5-S1), or None above T12-L1."""
    index = len(LEVELS) - 1 - (int(label) - FIRST_DISC_LABEL)
    return LEVELS[index] if 0 <= index < len(LEVELS) else None


def disc_label_of_level(level):
    """SPIDER disc label of a level name ("L5-S1" -> 201)."""
    return FIRST_DISC_LABEL + len(LEVELS) - 1 - LEVELS.index(level)
