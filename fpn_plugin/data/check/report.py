"""What a dataset check found: the :class:`Problem` records and the :class:`Report` it prints."""
from collections import Counter
from dataclasses import dataclass, field
from typing import List

__all__ = ["Problem", "Report"]


@dataclass
class Problem:
    """One problem: its kind, the file it is in and where in that file."""

    kind: str  # e.g. "missing image", "box outside image"
    file: str
    where: str  # e.g. "annotations[12] (id 13)" or "object 2"
    message: str

    def __str__(self):
        return f"[{self.kind}] {self.file}: {self.where}: {self.message}"


@dataclass
class Report:
    """What a check found."""

    name: str
    num_images: int = 0
    num_boxes: int = 0
    class_histogram: Counter = field(default_factory=Counter)  # class name -> boxes
    difficult: int = 0
    crowd: int = 0  # crowd boxes, not counted in num_boxes (training ignores them)
    id_mapping: List[str] = field(default_factory=list)  # lines "dataset id -> contiguous id"
    problems: List[Problem] = field(default_factory=list)
    # For drawing: (image path, [(class name, XYXY box)])
    samples: List[tuple] = field(default_factory=list)

    def add(self, kind, file, where, message):
        self.problems.append(Problem(kind, file, where, message))

    def kinds(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def format(self, max_problems: int = 200) -> str:
        lines = [f"== {self.name}", f"images: {self.num_images}   boxes: {self.num_boxes}"
                 + (f"   (difficult: {self.difficult})" if self.difficult else "")
                 + (f"   crowd boxes (not trained on): {self.crowd}" if self.crowd else "")]
        lines.append("class histogram (boxes per class):")
        width = max([len(n) for n in self.class_histogram] + [5])
        for name, count in sorted(self.class_histogram.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<{width}} {count}")
        lines.append("id mapping used for training:")
        lines += [f"  {m}" for m in self.id_mapping]
        if not self.problems:
            lines.append("problems: none")
        else:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(self.kinds().items()))
            lines.append(f"problems: {len(self.problems)} ({summary})")
            lines += [f"  {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more")
        return "\n".join(lines)
