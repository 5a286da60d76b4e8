import numpy as np

from processing.stitch.registration import NO_MATCH, Placement, detect, load_placements, proxy_gray, register
from processing.synth.synth_pano import make_cylinder_views
from tests.processing._stitch_helpers import texture


def _feats(views):
    out = []
    for v in views:
        g, f = proxy_gray(v, 1.0)
        out.append(detect(g, f, v.shape[1], v.shape[0], 800))
    return out


def test_cylinder_views_register_and_level():
    photo = texture(220, 1400, seed=5)
    views, yaws, f = make_cylinder_views(photo, n_views=8, overlap=0.4)
    reg = register(_feats(views), [f"v{k}.png" for k in range(8)])
    assert sorted(reg.cameras) == list(range(8)) and not reg.dropped
    assert reg.rms_px < 1.0
    # relative yaws and focal recovered; horizon level (x axes horizontal)
    for c in reg.cameras.values():
        assert abs(c.rot[1, 0]) < 0.01
        assert abs(c.focal / f - 1) < 0.03
    z = np.array([reg.cameras[k].rot[:, 2] for k in range(8)])
    got = np.degrees(np.arctan2(z[:, 0], z[:, 2]))
    d = np.angle(np.exp(1j * np.radians(got - got[0] - (np.array(yaws) - yaws[0]))), deg=True)
    assert np.abs(d).max() < 0.3


def test_image_matching_nothing_is_dropped_or_placed_from_prior():
    photo = texture(220, 1400, seed=6)
    views, yaws, f = make_cylinder_views(photo, n_views=6, overlap=0.4)
    blank = np.full_like(views[0], 0.5)  # sky / haze: no features
    names = [f"v{k}.png" for k in range(6)] + ["blank.png"]
    feats = _feats([*views, blank])
    reg = register(feats, names)
    assert reg.dropped == {6: NO_MATCH}
    assert 6 not in reg.cameras
    pl = {n: Placement(y, 0.0, 0.0, f) for n, y in zip(names, [*yaws, 45.0], strict=True)}
    reg2 = register(feats, names, pl)
    assert 6 in reg2.cameras and reg2.from_prior == [6] and not reg2.dropped
    # placed where its prior says, relative to the matched images
    z6 = reg2.cameras[6].rot[:, 2]
    z0 = reg2.cameras[0].rot[:, 2]
    ang = np.degrees(np.arctan2(z6[0], z6[2]) - np.arctan2(z0[0], z0[2]))
    assert abs(((ang - 45.0) + 180) % 360 - 180) < 1.0


def test_load_placements_formats(tmp_path):
    (tmp_path / "image_list.txt").write_text("# filename focal\na.jpg\t704.9\nb.jpg 706.3\n")
    pl = load_placements(tmp_path / "image_list.txt")
    assert pl["a.jpg"].focal == 704.9 and not pl["a.jpg"].has_angles
    (tmp_path / "angles.csv").write_text("file,yaw,pitch,roll,focal\nx.png,10,-5,0,800\ny.png,20,,,\n")
    pl = load_placements(tmp_path / "angles.csv")
    assert pl["x.png"].has_angles and pl["x.png"].focal == 800
    assert pl["y.png"].pitch is None
