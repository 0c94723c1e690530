// What FTorch does from Fortran: load a diffnorm TorchScript export with libtorch (C++) and run
// it on float64 raw features (1, 5, ny, nx); prints the target, one value per line.
#include <torch/script.h>
#include <iostream>
int main(int argc, char** argv) {
  torch::jit::script::Module m = torch::jit::load(argv[1]);
  int ny = std::atoi(argv[2]), nx = std::atoi(argv[3]);
  auto x = torch::arange(5 * ny * nx, torch::kFloat64).reshape({1, 5, ny, nx});
  x = torch::sin(x * 0.37);
  auto y = m.forward({x}).toTensor().contiguous();
  std::cout.precision(9);
  for (int64_t k = 0; k < y.numel(); ++k) std::cout << y.data_ptr<float>()[k] << "\n";
  return 0;
}
