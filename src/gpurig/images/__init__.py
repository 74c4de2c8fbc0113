"""Container images of the lock: render (Dockerfiles from the template), build (BuildKit),
smoke (bloomkit smoke in the image), sizes (an image's size computed from the lock)."""
