// ONNX Runtime side of lhcml-infer (see model.hpp).
#include "model.hpp"

#include <nlohmann/json.hpp>

#include "errors.hpp"

namespace lhcml {

const std::vector<std::string> kRequiredMetadata = {"lhcml_version", "tagger_name", "inputs", "outputs",
                                                    "class_names", "norm_yaml"};

std::string init_onnxruntime() {
  const OrtApiBase* base = OrtGetApiBase();
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (api == nullptr)
    throw InputError(std::string("the ONNX Runtime library (") + base->GetVersionString() +
                     ") is older than the headers lhcml-infer was built with (C API version " +
                     std::to_string(ORT_API_VERSION) + "); rebuild against a newer onnxruntime");
  Ort::InitApi(api);
  return base->GetVersionString();
}

namespace {

// Slots up to the last real object of any jet of the batch.
std::size_t used_slots(const unsigned char* valid, std::size_t batch, std::size_t full) {
  std::size_t used = 1;  // at least one slot (a jet without objects keeps one padded slot)
  for (std::size_t r = 0; r < batch; ++r)
    for (std::size_t k = full; k > used; --k)
      if (valid[r * full + k - 1]) {
        used = k;
        break;
      }
  return used;
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& key, const std::string& path) {
  if (!j.is_array()) throw InputError("metadata '" + key + "' of " + path + " is not a list; re-export the model with `lhcml export`");
  std::vector<std::string> out;
  for (const auto& x : j) {
    if (!x.is_string()) throw InputError("metadata '" + key + "' of " + path + " is not a list of names");
    out.push_back(x.get<std::string>());
  }
  return out;
}

}  // namespace

Model::Model(const std::string& path, int threads) : path_(path), env_(ORT_LOGGING_LEVEL_ERROR, "lhcml-infer") {
  Ort::SessionOptions opts;
  opts.SetIntraOpNumThreads(threads);
  opts.SetInterOpNumThreads(1);
  opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);  // = Python's default
  try {
    session_ = Ort::Session(env_, path.c_str(), opts);
  } catch (const Ort::Exception& e) {
    throw InputError("cannot load " + path + " as an ONNX model: " + e.what());
  }

  Ort::AllocatorWithDefaultOptions alloc;
  Ort::ModelMetadata meta = session_.GetModelMetadata();
  std::vector<std::string> missing;
  for (const auto& key : kRequiredMetadata) {
    auto value = meta.LookupCustomMetadataMapAllocated(key.c_str(), alloc);
    if (value)
      metadata_[key] = value.get();
    else
      missing.push_back(key);
  }
  if (!missing.empty()) {
    std::string m;
    for (const auto& k : missing) m += (m.empty() ? "" : ", ") + k;
    throw InputError(path + " lacks the lhcml metadata (" + m +
                     "): it was not written by `lhcml export` (or by an lhcml version that did not embed it); "
                     "export the trained model with `lhcml export RUN_OR_MODEL " + path + "`");
  }
  for (const char* key : {"model_name"}) {
    auto value = meta.LookupCustomMetadataMapAllocated(key, alloc);
    if (value) metadata_[key] = value.get();
  }

  nlohmann::json in_json, out_json, cls_json;
  try {
    in_json = nlohmann::json::parse(metadata_["inputs"]);
    out_json = nlohmann::json::parse(metadata_["outputs"]);
    cls_json = nlohmann::json::parse(metadata_["class_names"]);
  } catch (const nlohmann::json::exception& e) {
    throw InputError("the lhcml metadata of " + path + " is not valid JSON (" + e.what() + "); re-export the model with `lhcml export`");
  }
  outputs_ = string_list(out_json, "outputs", path);
  const auto classes = string_list(cls_json, "class_names", path);
  if (classes.size() != outputs_.size())
    throw InputError(path + ": " + std::to_string(outputs_.size()) + " outputs but " + std::to_string(classes.size()) +
                     " class names in its metadata; re-export the model with `lhcml export`");

  // graph outputs must be the metadata's, in order, each a float (batch,) tensor
  const std::size_t n_out = session_.GetOutputCount();
  std::vector<std::string> graph_out;
  for (std::size_t i = 0; i < n_out; ++i) {
    graph_out.push_back(session_.GetOutputNameAllocated(i, alloc).get());
    const Ort::TypeInfo type_info = session_.GetOutputTypeInfo(i);  // owns what info views
    const auto info = type_info.GetTensorTypeAndShapeInfo();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || info.GetShape().size() != 1)
      throw InputError(path + ": output '" + graph_out.back() + "' is not a float (batch,) tensor; re-export the model with `lhcml export`");
  }
  if (graph_out != outputs_)
    throw InputError(path + ": the graph's outputs differ from the 'outputs' in its metadata; re-export the model with `lhcml export`");

  if (!in_json.is_object()) throw InputError("metadata 'inputs' of " + path + " is not a mapping; re-export the model with `lhcml export`");
  const std::size_t n_in = session_.GetInputCount();
  for (std::size_t i = 0; i < n_in; ++i) {
    InputSpec spec;
    spec.name = session_.GetInputNameAllocated(i, alloc).get();
    if (!in_json.contains(spec.name))
      throw InputError(path + ": graph input '" + spec.name + "' is not described in its lhcml metadata; re-export the model with `lhcml export`");
    const auto& entry = in_json[spec.name];
    if (!entry.is_object() || !entry.contains("group") || !entry["group"].is_string())
      throw InputError("metadata 'inputs' of " + path + " has no group for '" + spec.name + "'");
    spec.group = entry["group"].get<std::string>();
    if (!entry.contains("variables") || entry["variables"].is_null())
      throw InputError(path + ": input '" + spec.name + "' is an image (group '" + spec.group +
                       "'); lhcml-infer evaluates taggers of jet and per-object variables only");
    spec.variables = string_list(entry["variables"], "inputs." + spec.name + ".variables", path);
    const Ort::TypeInfo type_info = session_.GetInputTypeInfo(i);  // owns what info views
    const auto info = type_info.GetTensorTypeAndShapeInfo();
    const auto shape = info.GetShape();
    const auto type = info.GetElementType();
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL && shape.size() == 2) {
      spec.mask = spec.object = true;
    } else if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && (shape.size() == 2 || shape.size() == 3)) {
      spec.object = shape.size() == 3;
      if (shape.back() > 0 && static_cast<std::size_t>(shape.back()) != spec.variables.size())
        throw InputError(path + ": input '" + spec.name + "' takes " + std::to_string(shape.back()) + " variables, its metadata lists " +
                         std::to_string(spec.variables.size()) + "; re-export the model with `lhcml export`");
    } else {
      throw InputError(path + ": input '" + spec.name + "' is neither float (batch, F) / (batch, n, F) features nor a bool (batch, n) mask");
    }
    inputs_.push_back(spec);
  }
  for (const auto& s : inputs_) {
    if (!s.mask) continue;
    bool has_features = false;
    for (const auto& f : inputs_) has_features |= !f.mask && f.object && f.group == s.group;
    if (!has_features) throw InputError(path + ": mask '" + s.name + "' has no feature input of group '" + s.group + "'");
  }
}

void Model::run(std::size_t batch, const std::map<std::string, std::vector<float>*>& features,
                const std::map<std::string, std::vector<unsigned char>*>& masks,
                const std::map<std::string, std::size_t>& n_slots, std::size_t offset_rows, float* scores) {
  static_assert(sizeof(bool) == sizeof(unsigned char), "bool must be one byte");
  const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  // Object groups: drop the slots that are padding in every jet of the batch, as lhcml's datamodule
  // does (_trim_objects): the graph masks padded slots, so the scores do not change, while the
  // cost grows with the slot count (files pad to 40 tracks, tt-bar jets have ~5-20).
  std::map<std::string, std::pair<float*, unsigned char*>> obj;
  std::map<std::string, std::size_t> used;
  for (const auto& s : inputs_) {
    if (!s.object || s.mask || used.count(s.group)) continue;
    const std::size_t full = n_slots.at(s.group), n_var = s.variables.size();
    float* f = features.at(s.group)->data() + offset_rows * full * n_var;
    unsigned char* m = masks.at(s.group)->data() + offset_rows * full;
    const std::size_t n = used_slots(m, batch, full);
    used[s.group] = n;
    if (n == full || batch == 1) {  // contiguous as it is
      obj[s.group] = {f, m};
      continue;
    }
    auto& fb = scratch_f_[s.group];
    auto& mb = scratch_m_[s.group];
    fb.resize(batch * n * n_var);
    mb.resize(batch * n);
    for (std::size_t r = 0; r < batch; ++r) {
      std::copy(f + r * full * n_var, f + (r * full + n) * n_var, fb.data() + r * n * n_var);
      std::copy(m + r * full, m + r * full + n, mb.data() + r * n);
    }
    obj[s.group] = {fb.data(), mb.data()};
  }
  std::vector<Ort::Value> values;
  std::vector<const char*> in_names;
  for (const auto& s : inputs_) {
    in_names.push_back(s.name.c_str());
    const auto n_var = static_cast<int64_t>(s.variables.size());
    const auto b = static_cast<int64_t>(batch);
    if (s.mask) {
      const auto n = static_cast<int64_t>(used.at(s.group));
      const int64_t shape[2] = {b, n};
      values.push_back(Ort::Value::CreateTensor<bool>(mem, reinterpret_cast<bool*>(obj.at(s.group).second), batch * n, shape, 2));
    } else if (s.object) {
      const auto n = static_cast<int64_t>(used.at(s.group));
      const int64_t shape[3] = {b, n, n_var};
      values.push_back(Ort::Value::CreateTensor<float>(mem, obj.at(s.group).first, batch * n * n_var, shape, 3));
    } else {
      float* data = features.at(s.group)->data() + offset_rows * n_var;
      const int64_t shape[2] = {b, n_var};
      values.push_back(Ort::Value::CreateTensor<float>(mem, data, batch * n_var, shape, 2));
    }
  }
  std::vector<const char*> out_names;
  for (const auto& o : outputs_) out_names.push_back(o.c_str());
  auto out = session_.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(), out_names.data(),
                          out_names.size());
  const std::size_t n_out = outputs_.size();
  for (std::size_t k = 0; k < n_out; ++k) {
    if (out[k].GetTensorTypeAndShapeInfo().GetElementCount() != batch)
      throw InputError(path_ + ": output '" + outputs_[k] + "' does not hold one value per jet");
    const float* p = out[k].GetTensorData<float>();
    for (std::size_t r = 0; r < batch; ++r) scores[r * n_out + k] = p[r];
  }
}

}  // namespace lhcml
