"""Edge packages: a verified build -> a folder and .tar.gz a device can check, build (TensorRT) and benchmark with only
its runtime and numpy; and `verify` of packages and build folders.

Example::

    from medexport.packaging import make_package, verify_path
    make_package(Path("out/build"), "openvino-cpu", Path("out/pkg"))
    verify_path(Path("out/pkg.tar.gz"))
"""
from medexport.packaging.package import make_package
from medexport.packaging.verify import verify_path

__all__ = ["make_package", "verify_path"]
