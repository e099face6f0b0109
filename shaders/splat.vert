#version 330 core
// One quad (4 vertices, 2 indexed triangles) per isotropic 3D Gaussian, projected with the EWA (local affine) approximation
// exactly like the engine's rasterizer, so both draw the same ellipse for the same camera.
//
// Pixel space: x right, y down, pixel (row i, column j) has its centre at (j + 0.5, i + 0.5).
// NDC y is mapped so framebuffer row 0 is image row 0: reading the framebuffer back gives a
// top-first image without a flip.

// The four vertices of a splat carry the same attributes; which corner a vertex is comes from its
// index (4 * splat + corner), so no per-vertex corner data is stored. (Not instanced: Mesa's software
// rasterizer pays several microseconds per instance.)
layout(location = 0) in vec3 center;        // world position, metres
layout(location = 1) in float sigma;        // isotropic std-dev, metres
layout(location = 2) in vec3 color;         // linear RGB in [0, 1]
layout(location = 3) in float opacity;      // [0, 1]

uniform mat4 viewmat;        // world -> camera (OpenCV: x right, y down, z forward)
uniform vec4 intrinsics;     // fx, fy, cx, cy in pixels
uniform vec2 image_size;     // width, height in pixels
uniform vec2 depth_range;    // near, far in metres
uniform float eps2d;         // added to the 2D covariance diagonal, pixels^2
uniform bool antialiased;    // Mip-Splatting: scale opacity by sqrt(det(cov) / det(cov + eps2d I))

out vec2 sigma_coords;       // position in the ellipse's eigenframe, in standard deviations
out vec3 splat_color;
out float splat_opacity;

void main() {
    vec2 corner = vec2(float(gl_VertexID & 1), float((gl_VertexID >> 1) & 1)) * 2.0 - 1.0;  // {-1, 1}^2
    vec4 cam = viewmat * vec4(center, 1.0);
    if (cam.z < depth_range.x || cam.z > depth_range.y || opacity <= 0.0) {
        gl_Position = vec4(2.0, 2.0, 2.0, 1.0);  // outside the clip volume: culled
        return;
    }
    float fx = intrinsics.x, fy = intrinsics.y;
    // Clamp the Jacobian's lateral position like the reference rasterizer (1.3x the half field of view)
    // so splats far outside the image don't blow up.
    vec2 lim = 1.3 * 0.5 * image_size / intrinsics.xy;
    vec2 t = clamp(cam.xy / cam.z, -lim, lim);
    float inv_z = 1.0 / cam.z;
    // J = [[fx/z, 0, -fx tx/z], [0, fy/z, -fy ty/z]]; cov2d = sigma^2 J J^T (+ eps2d I)
    vec3 jx = vec3(fx * inv_z, 0.0, -fx * t.x * inv_z);
    vec3 jy = vec3(0.0, fy * inv_z, -fy * t.y * inv_z);
    float var = sigma * sigma;
    float a = var * dot(jx, jx) + eps2d;
    float b = var * dot(jx, jy);
    float c = var * dot(jy, jy) + eps2d;
    float splat_alpha = opacity;
    if (antialiased) {
        float det_blurred = a * c - b * b;
        float det_sharp = (a - eps2d) * (c - eps2d) - b * b;
        splat_alpha *= sqrt(max(det_sharp / det_blurred, 0.0));
    }
    // Eigen-decomposition of the symmetric 2x2 covariance.
    float mid = 0.5 * (a + c);
    float root = sqrt(max(0.25 * (a - c) * (a - c) + b * b, 0.0));
    float lambda1 = mid + root;
    float lambda2 = max(mid - root, 1e-8);
    vec2 axis1 = abs(b) > 1e-12 ? normalize(vec2(b, lambda1 - a)) : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
    vec2 axis2 = vec2(-axis1.y, axis1.x);

    vec2 mean2d = vec2(fx * cam.x * inv_z + intrinsics.z, fy * cam.y * inv_z + intrinsics.w);
    // The quad reaches where alpha falls below 1/255 (the fragment cut-off), at most 3.33 sigma, as the
    // reference rasterizer's opacity-aware bounding box.
    float extent = min(3.33, sqrt(2.0 * log(max(splat_alpha * 255.0, 1.0))));
    sigma_coords = corner * extent;
    vec2 pixel = mean2d + sigma_coords.x * sqrt(lambda1) * axis1 + sigma_coords.y * sqrt(lambda2) * axis2;
    gl_Position = vec4(2.0 * pixel / image_size - 1.0, 0.0, 1.0);
    splat_color = color;
    splat_opacity = splat_alpha;
}
