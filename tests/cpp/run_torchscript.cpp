// What FTorch does from Fortran: load a diffnorm TorchScript export (the fields graph) with
// libtorch in C++, pass float64 mask, area, alpha_x, alpha_y of shape (1, ny, nx) as a host has
// them, print γ (m), one value per line (nan on land).
#include <torch/script.h>
#include <iostream>

int main(int argc, char** argv) {
  torch::jit::script::Module m = torch::jit::load(argv[1]);
  int ny = std::atoi(argv[2]), nx = std::atoi(argv[3]);
  auto k = torch::arange(ny * nx, torch::kFloat64).reshape({1, ny, nx});
  auto mask = (torch::sin(k * 0.37) > -0.8).to(torch::kFloat64);
  auto area = 1e8 * (1.2 + 0.3 * torch::sin(k * 0.11));
  auto ax = 1e8 * (0.8 + 0.3 * torch::cos(k * 0.23));
  auto ay = 1e8 * (0.7 + 0.2 * torch::cos(k * 0.19));
  auto g = m.forward({mask, area, ax, ay}).toTensor().contiguous();
  std::cout.precision(12);
  for (int64_t i = 0; i < g.numel(); ++i) std::cout << g.data_ptr<double>()[i] << "\n";
  return 0;
}
