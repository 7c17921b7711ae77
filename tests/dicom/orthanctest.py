#!/usr/bin/python3
"""A throw-away Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) for the
PACS round-trip check (check_orthanc.py) and for trying
examples/pacs_roundtrip.py by hand.  Standard library only.

The instance runs from a generated JSON configuration in a fresh temporary
directory (its storage and index there too), on free ports, with only the
DICOMweb plugin loaded (from the Debian plugin path), authentication off
and RemoteAccessAllowed false.  It never reads /etc/orthanc and never
touches the packaged service (systemd unit `orthanc`, /var/lib/orthanc,
ports 8042/4242): installing the package may start that service, and both
can run side by side.  As root, Orthanc runs as the `orthanc` user the
package creates (else `nobody`).  The DIMSE (DICOM port) server is off:
nothing here needs C-STORE, and Orthanc 1.10 (Debian 12) cannot bind it to
loopback.  Its HTTP server cannot be bound to loopback either before
Orthanc 1.12.10 ("HttpBindAddresses", written to the configuration for
versions that know it); 1.10 listens on all interfaces and answers only
loopback clients (RemoteAccessAllowed false, so others get 403).

    with Orthanc() as o:                 # started, /system answered
        o.url                            # http://127.0.0.1:PORT
        o.dicomweb                       # http://127.0.0.1:PORT/dicom-web
        o.upload(path_or_bytes)          # POST /instances
    # stopped (SIGTERM, then SIGKILL after 20 s), temporary directory removed

By hand: `tests/dicom/orthanctest.py [FILE.dcm...]` starts one, uploads the
files, prints its URLs and runs until Ctrl-C (in the foreground) or SIGTERM
(`kill PID`, `kill %1`: a job started with `&` never gets the terminal's
Ctrl-C, and ignores SIGINT when the shell has no job control) or SIGHUP;
each stops Orthanc and removes the temporary directory.
"""
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def installed():
    """None when Orthanc and its DICOMweb plugin are here, else why not."""
    if not os.access(ORTHANC, os.X_OK):
        return f"{ORTHANC} missing (apt-get install orthanc orthanc-dicomweb)"
    if not os.path.exists(DICOMWEB_PLUGIN):
        return f"{DICOMWEB_PLUGIN} missing (apt-get install orthanc-dicomweb)"
    return None


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _die_with_parent():
    """In the child, after the user switch (which clears it): SIGKILL when
    the test process dies, so a killed test leaves no Orthanc behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _traversable(path):
    """Whether every directory down to path lets others through (o+x)."""
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


class OrthancError(RuntimeError):
    pass


class Orthanc:
    def __init__(self, start_timeout=60.0, verbose=False):
        why = installed()
        if why:
            raise OrthancError(why)
        self.proc = None
        self.tmp = tempfile.mkdtemp(prefix="segd-orthanc-")
        self.log_path = os.path.join(self.tmp, "orthanc.log")
        try:
            self._start(start_timeout, verbose)
        except BaseException:
            self.close()
            raise

    def _config(self):
        return {
            "Name": "segd-test",
            "StorageDirectory": os.path.join(self.tmp, "db"),
            "IndexDirectory": os.path.join(self.tmp, "db"),
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpBindAddresses": ["127.0.0.1"],  # Orthanc >= 1.12.10; ignored before
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": False,
            "DicomPort": self.dicom_port,  # not opened; never the packaged 4242
            "DicomAet": "SEGDTEST",
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "LuaScripts": [],
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                         "Host": "127.0.0.1", "Ssl": False},
        }

    def _start(self, timeout, verbose):
        user = None
        if os.geteuid() == 0:
            for name in ("orthanc", "nobody"):
                try:
                    user = pwd.getpwnam(name)
                    break
                except KeyError:
                    pass
        if user and not _traversable(os.path.dirname(self.tmp)):
            user = None  # a private TMPDIR: the dropped user could not reach its storage
        if user:
            os.chown(self.tmp, user.pw_uid, user.pw_gid)
        for attempt in range(3):  # a free port may be taken between the probe and Orthanc's bind
            self.http_port, self.dicom_port = free_port(), free_port()
            cfg = os.path.join(self.tmp, "orthanc.json")
            with open(cfg, "w") as f:
                json.dump(self._config(), f, indent=1)
            os.chmod(cfg, 0o644)
            log = open(self.log_path, "ab")
            kw = {}
            if user:
                kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            self.proc = subprocess.Popen(
                [ORTHANC, *(["--verbose"] if verbose else []), cfg], cwd=self.tmp,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent, **kw)
            log.close()
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                if self.proc.poll() is not None:
                    break
                try:
                    self.system = self.get_json("/system", timeout=2)
                    return
                except (OSError, urllib.error.URLError, ValueError):
                    time.sleep(0.1)
            if self.proc.poll() is None:
                self._stop()
                raise OrthancError(f"Orthanc did not answer /system in {timeout:.0f} s\n{self.log()}")
            if "already in use" not in self.log(12):
                break
        raise OrthancError(f"Orthanc exited with status {self.proc.returncode}\n{self.log()}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self):
        return self.url + "/dicom-web"

    def log(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # ---- REST
    def request(self, path, data=None, headers=None, method=None, timeout=120):
        """(status, headers, body) of one request to Orthanc's REST API;
        an HTTP error status is returned, not raised."""
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {},
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def get_json(self, path, timeout=120):
        status, _, body = self.request(path, timeout=timeout)
        if status != 200:
            raise OrthancError(f"GET {path}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def upload(self, dicom):
        """POST /instances one Part-10 file (a path or bytes); Orthanc's answer."""
        if isinstance(dicom, str):
            with open(dicom, "rb") as f:
                dicom = f.read()
        status, _, body = self.request("/instances", data=dicom, method="POST",
                                       headers={"Content-Type": "application/dicom"})
        if status != 200:
            raise OrthancError(f"POST /instances: HTTP {status}: {body[:300]!r}")
        answer = json.loads(body)
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise OrthancError(f"POST /instances: {answer}")
        return answer

    def file(self, instance_id):
        """The stored Part-10 bytes of an instance (Orthanc id)."""
        status, _, body = self.request(f"/instances/{instance_id}/file")
        if status != 200:
            raise OrthancError(f"GET /instances/{instance_id}/file: HTTP {status}")
        return body

    # ---- stop
    def _stop(self, timeout=20.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)  # Orthanc's clean shutdown
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def close(self):
        """Stop Orthanc (its exit status, None if it had to be killed) and
        remove the temporary directory."""
        try:
            return self._stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main():
    # stop Orthanc and remove its storage (the with block) on SIGTERM and
    # on SIGHUP (the terminal closed) as on Ctrl-C
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *a: sys.exit(0))
    with Orthanc() as o:
        for path in sys.argv[1:]:
            o.upload(path)
        print(f"Orthanc {o.system.get('Version')}: REST {o.url}  DICOMweb {o.dicomweb}", flush=True)
        for sid in o.get_json("/series"):
            s = o.get_json(f"/series/{sid}")
            st = o.get_json(f"/studies/{s['ParentStudy']}")
            print(f"  {s['MainDicomTags'].get('Modality', '?')} series, {len(s['Instances'])} instances:"
                  f" --study {st['MainDicomTags'].get('StudyInstanceUID')}"
                  f" --series {s['MainDicomTags'].get('SeriesInstanceUID')}", flush=True)
        print(f"Ctrl-C, or `kill {os.getpid()}` when it runs in the background, stops it and removes "
              "its storage", file=sys.stderr, flush=True)
        try:
            o.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
