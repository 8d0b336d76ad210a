"""The task table: every per-disc grading task, and the task sets a model grades.

``TABLE`` holds one row per task. A ``TaskSet`` picks rows from it in head
order: ``paper``, the paper's six tasks (the default, and the phantom's), and
``spider``, the readings of the SPIDER data set (docs/data.md). Everything that
depends on the tasks (model heads, losses, metrics, dataset features, serving
signatures, reports) is derived from a model's or a dataset's task set, so a
new task is one row here and a name in a set.

``TASKS``, ``TASK_NAMES``, ``LESION_TASKS`` and ``MIRRORED`` are the paper
set's.
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
        short_code: where the name is longer than 14 characters, the task's code
            in DICOM results instead (``code``).
    """

    name: str
    class_names: tuple
    description: str
    lesion: tuple = None
    short_code: str = None

    @property
    def code(self):
        """The task's code in spine_tf's private DICOM coding scheme: its name, or its
        ``short_code``; with ``-<class index>`` or ``-p`` it stays within a DICOM Code
        Value's 16 characters."""
        return self.short_code or self.name

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def output_names(self):
        """Names of the task's serving outputs: (probabilities, grade)."""
        return f"{self.name}_probabilities", f"{self.name}_grade"


TABLE = (
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
    Task("narrowed", ("normal", "narrowed"), "disc height loss of any degree"),
    Task("modic", ("none", "change"),
         "Modic change of the marrow next to the disc, any type, either side"),
    Task("herniation", ("no", "yes"), "disc herniation"),
    Task("bulging", ("no", "yes"), "disc bulging"),
    Task("spondylolisthesis", ("no", "yes"), "slip of the vertebra above over the one below",
         short_code="listhesis"),
)


def task(name):
    """Returns the row of the table called ``name``; raises KeyError listing the names."""
    for candidate in TABLE:
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown task {name!r}; tasks are {', '.join(t.name for t in TABLE)}")


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """The tasks a model grades (its heads, in order) and a dataset labels.

    Attributes:
        name: its key in ``TASK_SETS``.
        tasks: the rows of ``TABLE``, in head order.
        description: one line for help texts and reports.
    """

    name: str
    tasks: tuple
    description: str

    @property
    def names(self):
        return tuple(t.name for t in self.tasks)

    @property
    def lesion_tasks(self):
        """The tasks with a side (``Task.lesion``), in order."""
        return tuple(t for t in self.tasks if t.lesion is not None)

    @property
    def mirrored(self):
        """For each task, the index of the task whose label it takes when the volume is
        reflected across the disc plane: upper and lower swap, the rest stay."""
        def index(row):
            if row.lesion is None:
                return self.tasks.index(row)
            kind, side = row.lesion
            other = (kind, {"upper": "lower", "lower": "upper"}[side])
            return next(i for i, t in enumerate(self.tasks) if t.lesion == other)

        return tuple(index(row) for row in self.tasks)

    def task(self, name):
        """The set's task called ``name``; KeyError naming the set's tasks."""
        if name not in self.names:
            raise KeyError(f"unknown task {name!r}; the {self.name} tasks are "
                           f"{', '.join(self.names)}")
        return self.tasks[self.names.index(name)]


def _set(name, names, description):
    return TaskSet(name, tuple(task(n) for n in names), description)


TASK_SETS = {s.name: s for s in (
    _set("paper", ("pfirrmann", "narrowing", "endplate_upper", "endplate_lower",
                   "marrow_upper", "marrow_lower"),
         "the paper's six gradings (SpineNet, MICCAI 2016)"),
    _set("spider", ("pfirrmann", "narrowed", "endplate_upper", "endplate_lower", "modic",
                    "herniation", "bulging", "spondylolisthesis"),
         "the SPIDER data set's gradings (van der Graaf et al. 2024)"),
)}
DEFAULT_TASK_SET = "paper"


def task_set(name):
    """The task set called ``name``; KeyError naming the sets."""
    if name not in TASK_SETS:
        raise KeyError(f"unknown task set {name!r}; task sets are {', '.join(TASK_SETS)}")
    return TASK_SETS[name]


def task_set_of(names, ordered=True):
    """The task set whose tasks are ``names`` in that order (a model's output names), or in
    any order (``ordered=False``: the keys of a dict of outputs).

    Raises:
        ValueError: no set has exactly these tasks.
    """
    names = tuple(names)
    for candidate in TASK_SETS.values():
        if candidate.names == names or (not ordered and set(candidate.names) == set(names)):
            return candidate
    raise ValueError(f"no task set has the tasks {', '.join(names)}; the sets are "
                     + "; ".join(f"{s.name}: {', '.join(s.names)}" for s in TASK_SETS.values()))


PAPER = TASK_SETS["paper"]
TASKS = PAPER.tasks
TASK_NAMES = PAPER.names
LESION_TASKS = PAPER.lesion_tasks
MIRRORED = PAPER.mirrored


def level_of_disc_label(label):
    """Level name of a SPIDER disc label (201 = L5-S1), or None above T12-L1."""
    index = len(LEVELS) - 1 - (int(label) - FIRST_DISC_LABEL)
    return LEVELS[index] if 0 <= index < len(LEVELS) else None


def disc_label_of_level(level):
    """SPIDER disc label of a level name ("L5-S1" -> 201)."""
    return FIRST_DISC_LABEL + len(LEVELS) - 1 - LEVELS.index(level)
