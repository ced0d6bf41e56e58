"""The small, typed interfaces every provider implements (offline and real).

Images cross these interfaces as encoded bytes (PNG/JPEG), never as library objects, so an
adapter that talks HTTP and one that draws with Pillow are interchangeable.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.providers.profile import CharacterProfile


@dataclass(frozen=True)
class BoundingBox:
    """Ratios of the image size (0..1), like Rekognition's BoundingBox."""

    left: float
    top: float
    width: float
    height: float

    def to_json(self) -> dict[str, float]:
        """``{"left", "top", "width", "height"}`` as ratios (the JSONB shape, face_json.py)."""
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Landmark:
    """A face landmark: Rekognition's ``type`` name at (x, y), ratios of the image size."""

    type: str  # e.g. "eyeLeft", "eyeRight", "mouth", "nose" (Rekognition's names)
    x: float  # ratio of image width
    y: float  # ratio of image height


@dataclass(frozen=True)
class Face:
    """One detected face: its box, a 0..100 confidence, the landmarks the detector found and
    its JSON-ready ``attributes`` (e.g. ``{"smile": {"value": true, "confidence": 93.1}}``)."""

    box: BoundingBox
    confidence: float  # 0..100
    landmarks: tuple[Landmark, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)  # e.g. {"smile": {"value": true}}


@dataclass(frozen=True)
class Label:
    """A label for the photo ("Person", "Face", "Smile"...), 0..100 confidence; ``instances``
    are boxes of labelled objects (stored as detected_objects), ``parents`` Rekognition's hierarchy."""

    name: str
    confidence: float  # 0..100
    instances: tuple[BoundingBox, ...] = ()  # labelled objects with boxes -> detected_objects
    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class PhotoAnalysis:
    """What an analyzer found in one photo: the upright image size in pixels, the usable faces
    (largest first), labels, which detector ran, and faces too small to use."""

    image_width: int
    image_height: int
    faces: tuple[Face, ...]
    labels: tuple[Label, ...]
    detector: str  # which implementation produced it, e.g. "opencv-haar" or "aws-rekognition"
    # Faces found but too small to use (pipeline/stories/faces.py), largest first: a photo with only these
    # is refused as "too small, take a closer photo" rather than "no face".
    small_faces: tuple[Face, ...] = ()

    @property
    def primary_face(self) -> Face | None:
        """The largest face. Which face a story uses is chosen with the child's age at the story start
        (pipeline/stories/faces.py choose_protagonist)."""
        if not self.faces:
            return None
        return max(self.faces, key=lambda f: f.box.width * f.box.height)


@dataclass(frozen=True)
class StoryRequest:
    """One story as a writer or illustrator sees it: the child's name and age (years), the
    theme name, how many pages, a seed stable per story (a re-run writes the same story) and,
    for illustrators, the ``character`` profile of the story's face (pipeline/providers/character.py;
    None: no profile, e.g. the outline or a photo analysed before profiles existed)."""

    child_name: str
    child_age: int
    theme: str
    page_count: int
    seed: int  # stable per story, so a re-run writes the same story
    character: CharacterProfile | None = None  # how the child looks; never the name


@dataclass(frozen=True)
class Outline:
    """A story's plan: title, one beat per page (``len(beats) == page_count``) and a visual style
    line shared by all pages."""

    title: str
    beats: tuple[str, ...]  # one short plan line per page, len == page_count
    style: str = ""  # a visual style note shared by all pages (consistent look)


@dataclass(frozen=True)
class PageRequest:
    """One page to write or draw: the story, its outline, the 1-based page number and, for a
    redone page, the parent's hint and the revision."""

    story: StoryRequest
    outline: Outline
    page_number: int  # 1-based
    # A redo (README "Redoing a page"): the parent's short hint ("make the dragon green"; <= 200
    # printable characters, checked before it is stored), DATA for the page, never instructions;
    # and the revision being made (1: the story as first made), which a provider may mix into
    # its seed so a redo without a hint still differs.
    hint: str = ""
    revision: int = 1


class PhotoAnalyzer(Protocol):
    """Finds faces and labels in a photo (OpenCV offline, Amazon Rekognition)."""

    def analyze_photo(self, image: bytes) -> PhotoAnalysis:
        """Raise PermanentStepError for an unreadable image; an image with no face returns
        an analysis with no faces (the caller decides the policy)."""
        ...


class StoryWriter(Protocol):
    """Writes a story's outline, then each page's text (offline kits, OpenAI)."""

    def write_outline(self, req: StoryRequest) -> Outline:
        """The title, ``req.page_count`` beats and a style line; PermanentStepError for a request
        that cannot be written (unknown theme), TransientStepError for a provider hiccup."""
        ...

    def write_page(self, req: PageRequest) -> str:
        """The text of page ``req.page_number`` (a few sentences sized to the child's age)."""
        ...


class Illustrator(Protocol):
    """Draws pages synchronously (offline illustrator); remote job providers use ImageJobs."""

    def draw_base(self, req: PageRequest) -> bytes:
        """A PNG of the page's illustration with a place for the child's face."""
        ...

    def personalize(self, base: bytes, photo: bytes, face: Face, req: PageRequest) -> bytes:
        """The base illustration with the child's likeness from ``photo`` put in (PNG)."""
        ...


# --- real (remote) providers -------------------------------------------------------------------

class RequestHooks(Protocol):
    """What the pipeline wants around every HTTP request an adapter makes to its provider.

    ``before`` may block briefly or raise TransientStepError (the shared Redis quota is full:
    the step is re-scheduled rather than holding a worker slot); ``after`` records metrics.
    ``outcome`` is one of "ok", "throttled", "server_error", "timeout", "connection_error",
    "client_error", "malformed"."""

    def before(self, provider: str, operation: str) -> None:
        """Called before each request; may block briefly or raise TransientStepError (quota spent)."""
        ...

    def after(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        """Called after each request with its outcome and duration in seconds (metrics)."""
        ...


class NoHooks:
    """RequestHooks that do nothing (tests, tools)."""

    def before(self, provider: str, operation: str) -> None:
        """Nothing."""
        return None

    def after(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        """Nothing."""
        return None


@dataclass(frozen=True)
class JobStatus:
    """A remote image job (a Replicate prediction) as last seen."""

    # "running" (starting/processing), "succeeded", "failed", "canceled", or "expired": the job
    # succeeded but its output is gone (deleted or purged by the provider before we copied it;
    # only a new job can make the picture again).
    state: str
    output_url: str | None = None  # the image to copy into our storage when succeeded
    error: str | None = None  # the provider's reason when failed/canceled/expired, for people
    # An ended job: seconds from its creation to its end, as the provider reports it (None:
    # unknown); pipeline/kernel/job_timing.py schedules the next looks from these.
    seconds: float | None = None


class ImageJobs(Protocol):
    """An image provider whose work runs as remote jobs that outlive a task run.

    The pipeline persists the job id before it waits, polls by re-scheduling the step (never
    by sleeping in a worker slot) and copies the output into its own storage at once.
    Inputs are deterministic for a page, so ``find`` can recognise a job created by a run that
    died before it could record the id."""

    name: str

    def base_input(self, req: PageRequest) -> dict[str, Any]:
        """The model input for a page's base illustration; deterministic for a page."""
        ...

    def personalize_input(self, base_ref: str, photo_ref: str, face: Face, req: PageRequest) -> dict[str, Any]:
        """``*_ref``: an https URL the provider can read, or a data: URI."""
        ...

    def create(self, kind: str, model_input: dict[str, Any]) -> str:
        """Start a job (kind "base" or "personalize"); returns its id."""
        ...

    def find(self, kind: str, model_input: dict[str, Any], created_after: Any,
             exclude: Collection[str] = ()) -> str | None:
        """The id of a usable job already created with exactly this input since
        ``created_after``, other than those in ``exclude`` (earlier jobs of the same step)."""
        ...

    def status(self, job_id: str) -> JobStatus:
        """The job now; state "expired" when its output is gone (never raises for that)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Ask the provider to stop the job (best effort; a finished job stays finished)."""
        ...

    def download(self, url: str) -> bytes:
        """The output's bytes; ``OutputGoneError`` (a PermanentStepError) when the output was
        deleted before it could be copied."""
        ...
