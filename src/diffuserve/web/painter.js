// The mask painter: the image on one canvas, the painted area on another stacked above
// it, both at the image's own pixel size (CSS scales them to fit). The mask sent is
// OpenAI's: opaque everywhere except where painted, which is fully transparent (alpha 0).

export class Painter {
  constructor(base, overlay) {
    this.base = base;
    this.overlay = overlay;
    this.tool = "brush";
    this.size = 48;
    this.painted = false;
    this.onchange = () => {};
    this.last = null;
    this.hasImage = false;
    overlay.addEventListener("pointerdown", (event) => this.#down(event));
    overlay.addEventListener("pointermove", (event) => this.#move(event));
    for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
      overlay.addEventListener(name, () => { this.last = null; });
    }
  }

  get width() { return this.base.width; }
  get height() { return this.base.height; }

  /** Show ``bitmap`` (an ImageBitmap or <img>) at its natural size; the mask is cleared. */
  load(bitmap) {
    const width = bitmap.naturalWidth || bitmap.width;
    const height = bitmap.naturalHeight || bitmap.height;
    for (const canvas of [this.base, this.overlay]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.base.getContext("2d").drawImage(bitmap, 0, 0);
    this.hasImage = true;
    // A brush of about a tenth of the image, whatever its size.
    this.size = Math.max(4, Math.round(Math.min(width, height) / 10));
    this.clear();
  }

  clear() {
    this.overlay.getContext("2d").clearRect(0, 0, this.overlay.width, this.overlay.height);
    this.painted = false;
    this.onchange();
  }

  /** Paint everything: the keyboard's way to ask for the whole image to be redrawn. */
  fill() {
    const ctx = this.overlay.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#ff2d95";
    ctx.fillRect(0, 0, this.overlay.width, this.overlay.height);
    this.painted = true;
    this.onchange();
  }

  #point(event) {
    const box = this.overlay.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * this.overlay.width,
      y: ((event.clientY - box.top) / box.height) * this.overlay.height,
    };
  }

  #down(event) {
    if (!this.hasImage || event.button > 0) return;
    this.overlay.setPointerCapture?.(event.pointerId);
    const point = this.#point(event);
    this.#stroke(point, point);
    this.last = point;
    event.preventDefault();
  }

  #move(event) {
    if (this.last === null) return;
    const point = this.#point(event);
    this.#stroke(this.last, point);
    this.last = point;
    event.preventDefault();
  }

  #stroke(from, to) {
    const ctx = this.overlay.getContext("2d");
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = "#ff2d95";
    ctx.lineWidth = this.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
    if (this.tool === "brush") this.painted = true;
    else this.painted = this.#anyPainted();
    this.onchange();
  }

  #anyPainted() {
    const { data } = this.overlay.getContext("2d").getImageData(0, 0, this.width, this.height);
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
    return false;
  }

  /** The image as a PNG (its own pixels and size, alpha kept). */
  imageBlob() {
    return new Promise((resolve) => this.base.toBlob(resolve, "image/png"));
  }

  /** OpenAI's mask as a PNG: alpha 0 where painted, opaque elsewhere. */
  maskBlob() {
    const mask = document.createElement("canvas");
    mask.width = this.width;
    mask.height = this.height;
    const ctx = mask.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, mask.width, mask.height);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(this.overlay, 0, 0);
    return new Promise((resolve) => mask.toBlob(resolve, "image/png"));
  }
}
