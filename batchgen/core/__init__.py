"""The pure core: values in, values out. Nothing here imports httpx, anyio, sqlmodel or sqlalchemy."""
