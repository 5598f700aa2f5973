"""What a serving process looks after besides requests: the image store and index checkpoints.

At start it removes what a crash left in the image store (objects no item names, unfinished
temporary files); while it runs it commits the API's writes as index generations in the background; at a
clean shutdown it commits what is left. With `serve --workers N` one worker does this (`owner`);
the others only join the image store's lock, so the owner never takes their uploads in flight
for litter.
"""

from __future__ import annotations

from blipsearch.indexer.upload_files import UploadFolder
from blipsearch.search.checkpoint import Checkpointer
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings


class ServerUpkeep:
    def __init__(self, settings: Settings, service: SearchService, *, owner: bool = True) -> None:
        self.service = service
        self.owner = owner
        self.uploads = UploadFolder.for_settings(settings)
        self.checkpointer = Checkpointer(
            service, changes=settings.api_checkpoint_changes, seconds=settings.api_checkpoint_seconds
        )

    def start(self) -> ServerUpkeep:
        if not self.owner:
            self.uploads.join()
            return self
        self.uploads.open(self.service.catalog)
        self.checkpointer.start()
        return self

    def stop(self) -> None:
        if self.owner:
            self.checkpointer.stop()
        self.uploads.close()
