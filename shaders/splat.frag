#version 330 core
// Gaussian falloff exp(-0.5 r^2), r in standard deviations; premultiplied-alpha output for
// back-to-front "over" blending (ONE, ONE_MINUS_SRC_ALPHA).

in vec2 sigma_coords;
in vec3 splat_color;
in float splat_opacity;

out vec4 frag_color;

void main() {
    float alpha = min(0.999, splat_opacity * exp(-0.5 * dot(sigma_coords, sigma_coords)));
    if (alpha < 1.0 / 255.0) {
        discard;  // same cut-off as the reference rasterizer
    }
    frag_color = vec4(splat_color * alpha, alpha);
}
