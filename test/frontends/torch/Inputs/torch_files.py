#!/usr/bin/python3
"""Torch checkpoints for the lit tests, made with the real torch.save.

    torch_files.py state-dict  SAFETENSORS OUT.bin    the tensors as a flat state dict
    torch_files.py training    SAFETENSORS OUT.pt     {"model": ..., "optimizer": ...,
                                                       "step": 3, "model_cfg": {...}}
    torch_files.py legacy      SAFETENSORS OUT.bin    the pre-1.6 non-zip format
    torch_files.py exploit     MARKER OUT.pt          a zip whose data.pkl runs
                                                       `touch MARKER` when unpickled
    torch_files.py unpickle    FILE.pt                naive pickle.loads of data.pkl
"""
import collections
import io
import os
import pickle
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "reference"))


def state_dict(path):
    import torch
    from safetensors_io import read_safetensors
    return collections.OrderedDict(
        (k, torch.as_tensor(v)) for k, v in read_safetensors(path).items())


class Exploit:
    """What an attacker pickles: unpickling calls os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def main(argv):
    mode = argv[1]
    if mode in ("state-dict", "training", "legacy"):
        import torch
        tensors = state_dict(argv[2])
        if mode == "training":
            param = torch.nn.Parameter(torch.zeros(4))
            optimizer = torch.optim.AdamW([param])
            param.grad = torch.ones(4)
            optimizer.step()
            obj = {"model": tensors, "optimizer": optimizer.state_dict(), "step": 3,
                   "model_cfg": {"rope_partial": 8, "max_seq_len": 256, "top_k": 2,
                                 "mup_base_d": 48, "rms_eps": 1e-6}}
        else:
            obj = tensors
        torch.save(obj, argv[3], _use_new_zipfile_serialization=mode != "legacy")
    elif mode == "exploit":
        # The archive torch.save would write, with a hostile data.pkl.
        with zipfile.ZipFile(argv[3], "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl",
                       pickle.dumps({"w": Exploit("touch " + argv[2])}, protocol=2))
            z.writestr("archive/byteorder", "little")
            z.writestr("archive/version", "3\n")
    elif mode == "unpickle":
        with zipfile.ZipFile(argv[2]) as z:
            pickle.loads(z.read("archive/data.pkl"))
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main(sys.argv)
